-- `paystream status`: each partition's throughput over the last minute and
-- the age of its last batch, kept in the offset row the batch transaction
-- already updates (paystream/stage/fencing.py `advance`), so measuring adds
-- no statement to the hot path.
--
-- A point (offset, time) means "by this time, every record below this offset
-- was processed". The window starts at one such point; the next window's
-- start is a later one. When the next window's start is 60 s old, it becomes
-- the window's start and the previous batch's end becomes the next window's
-- start: in steady traffic the window then spans 60 to 120 s up to the last
-- batch, and status reports (next_offset - window_offset) / (last_batch_at -
-- window_started_at). docs/operations.md ("Status") says what it means.
--
-- last_batch_at is only set by a batch: a claim (a rebalance) moves
-- updated_at but processes nothing.
ALTER TABLE stage_offsets
    ADD COLUMN last_batch_at          timestamptz,
    ADD COLUMN window_offset          bigint,
    ADD COLUMN window_started_at      timestamptz,
    ADD COLUMN next_window_offset     bigint,
    ADD COLUMN next_window_started_at timestamptz;
-- Rows advanced before this migration: their last write is the best date
-- there is (a later claim may have moved it); the window starts at their next batch.
UPDATE stage_offsets SET last_batch_at = updated_at WHERE next_offset <> -1;

-- Dead letters of a stage in the last hour, counted by `paystream status`.
CREATE INDEX dead_letters_stage_received_idx ON dead_letters (stage, received_at);
