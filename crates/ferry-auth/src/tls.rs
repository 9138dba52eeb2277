//! TLS for the HTTP and Kafka listeners (rustls with ring).
