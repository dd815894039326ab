"""The execution path: completion and ratings, budget reservations, signed receipts."""
