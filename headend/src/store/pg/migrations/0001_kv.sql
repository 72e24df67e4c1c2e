-- The head-end's records: one ordered key space, as in the embedded store (headend/src/store/mod.rs
-- lists the key prefixes), so both stores hold the same records under the same keys. bytea compares
-- octet by octet, so a prefix scan is a range on the primary key, in the embedded store's order.
--
-- The primary key is the constraint the money relies on: records written once are written with a
-- plain INSERT, so the database refuses a second token with the same meter and serial
-- (tok/<meter>\0<serial>), a second payment record entry with the same sequence number (pay/<seq>), a
-- second purchase under the same request id (req/<customer>\0<id>) and a second copy of an uplink
-- message (dd/<gateway>\0<id>); the transaction that tried is rolled back whole.
CREATE TABLE kv (
    key   bytea PRIMARY KEY CHECK (octet_length(key) > 0),
    value bytea NOT NULL
);
