"""PostgreSQL access: connection pools and versioned migrations."""
