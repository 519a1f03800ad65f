"""The harness's world: the embedded broker and Redis, the synthetic model, entities and
events, the stand-ins for Feast's writer and the Schema Registry, and events in the registry
formats."""
