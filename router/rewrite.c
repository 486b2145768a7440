/* router/rewrite.c - placeholder until its module lands. */
