/* registry/route_table.c - placeholder until its module lands. */
