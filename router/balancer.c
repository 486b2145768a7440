/* router/balancer.c - placeholder until its module lands. */
