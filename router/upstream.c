/* router/upstream.c - placeholder until its module lands. */
