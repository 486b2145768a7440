/* router/sticky.c - placeholder until its module lands. */
