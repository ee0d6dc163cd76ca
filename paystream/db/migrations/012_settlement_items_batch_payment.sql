-- Settlement publishes a closed batch chunk by chunk (workers/settlement_close.py
-- `next_chunk`): the batch's next items in payment_id order after a cursor,
-- `WHERE batch_id = $1 AND payment_id > $2 ORDER BY payment_id LIMIT $3`.
-- With only an index on batch_id the planner had two ways in: the batch's
-- items then a sort, or the primary key in payment_id order filtered on the
-- batch, which walks every item after the cursor, whatever its batch. In a
-- 1,000/s load test the second cost grew with the table: sampling
-- pg_stat_activity every 0.1 s, this statement was active in 14, 22, 46, 53 and
-- 73 of each 10 s's 100 samples, and clearing and settlement stalled behind the
-- CPU it took. With (batch_id, payment_id) one index gives both the batch and
-- the order, and the statement left the samples (none in the top two of any
-- 10 s; p50/p99/max 201/724/1,018 ms before, 154/321/456 ms after, one run
-- each). The batch_id index served nothing this one does not: it goes.
CREATE INDEX settlement_items_batch_payment_idx ON settlement_items (batch_id, payment_id);
DROP INDEX settlement_items_batch_idx;
