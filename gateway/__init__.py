"""The TCP front: client sockets on the game (and login) ports, forwarded over the bus."""
