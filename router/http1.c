/* router/http1.c - placeholder until its module lands. */
