-- HOT updates for payments: a payment's row is updated three or four times on
-- its way (held, cleared, given a batch, settled). Each update that changes an
-- indexed column, or finds no room on its page, writes a new entry into every
-- index of the table; a HOT update writes none. Measured with the database
-- ceiling (docs/performance.md): 0.4% of payments' updates were HOT, because
-- `status` was indexed and the pages were full.
--
-- payments_status_idx served no statement of the stages (they find payments by
-- id); reconcile and the tools that filter on status scan or join the whole
-- table anyway. Free space on each page lets the new row version stay on it:
-- in a 20,000-payment ceiling run, HOT updates of payments were 0.4% before,
-- 40% with fillfactor 80, 55% with 70 and 71% with 60 (70: a third more pages
-- for an insert-mostly table, the middle of the range).
-- Fillfactor applies to pages written from now on: a database migrated with
-- rows in it gains as its new pages fill.
DROP INDEX IF EXISTS payments_status_idx;
ALTER TABLE payments SET (fillfactor = 70);
