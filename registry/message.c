/* registry/message.c - placeholder until its module lands. */
