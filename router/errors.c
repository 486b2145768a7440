/* router/errors.c - placeholder until its module lands. */
