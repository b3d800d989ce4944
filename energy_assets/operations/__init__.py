"""Operations: the demo supervisor, instance configuration and logging."""
