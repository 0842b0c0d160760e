"""Keys: `crypto` (the only importer of cryptography's hazmat layer), the key `hierarchy`,
key `providers` for the callers, and password hashing on a thread of its own."""
