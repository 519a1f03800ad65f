"""Decoding input records into a batch's columns: events as JSON (``events``) or framed by a
Schema Registry (``wire``, ``formats``, ``writer_schema``), read by readers specialised to the
fields a model reads (``column_reader``, ``avro_reader``, ``protobuf_reader``)."""
