"""Jobs: read facts through graph/, decide with rules/, keep state in store/."""
