/* registry/pruner.c - placeholder until its module lands. */
