/* config/duration.c - placeholder until its module lands. */
