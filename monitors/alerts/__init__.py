"""How alerts leave: Adaptive Cards for Teams, an outbox in Table Storage, and a dispatcher."""
