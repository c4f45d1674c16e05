"""Launchers for the local stack: a real Apache Kafka broker (KRaft) and a real tritonserver."""
