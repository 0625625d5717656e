"""Interaction events: the broker (Redis Streams or Kafka), the consumer and how events are applied."""
