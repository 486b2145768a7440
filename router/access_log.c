/* router/access_log.c - placeholder until its module lands. */
