"""Huawei Cloud ECS: request signing, a typed async client, error classes and a simulator."""
