/* router/router.c - placeholder until its module lands. */
