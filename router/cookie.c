/* router/cookie.c - placeholder until its module lands. */
