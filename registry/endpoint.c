/* registry/endpoint.c - placeholder until its module lands. */
