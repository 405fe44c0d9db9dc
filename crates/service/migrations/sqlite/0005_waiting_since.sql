-- Agent notifications: since when a user with a human has waited for an agent's reply.
ALTER TABLE threads ADD COLUMN waiting_since INTEGER;
