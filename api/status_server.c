/* api/status_server.c - placeholder until its module lands. */
