/* registry/nats_client.c - placeholder until its module lands. */
