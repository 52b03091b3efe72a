//! The TrainingJob controller against a mocked Kubernetes API, with the real PostgreSQL and Redis.
