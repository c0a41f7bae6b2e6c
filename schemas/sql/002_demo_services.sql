-- Demo services for the local stack and tests: two companies, branches, event types 123 and 456,
-- and one service without an event type (exercises SLOTGUARD_UNKNOWN_EVENT_TYPE).

INSERT INTO services (id, company_id, branch_id, name, calcom_event_type_id, duration_minutes) VALUES
    (1, 15, 1,    'Haircut',      123,  30),
    (2, 15, 2,    'Colouring',    456,  90),
    (3, 20, 7,    'Massage',      456,  60),
    (4, 20, NULL, 'Walk-in',      NULL, 45);

-- Explicit ids above do not advance the identity; later inserts must not collide with them.
SELECT setval(pg_get_serial_sequence('services', 'id'), (SELECT max(id) FROM services));
