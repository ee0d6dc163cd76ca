-- The risk stage's payer-history read (workers/risk.py `_load_context`): each
-- batch reads, for every payer in it, the approved decisions of the last 24
-- hours (the velocity windows). With a history in the database (`paystream
-- bench --history N`, docs/performance.md "Cost as the data grows") the
-- planner cannot see that each payer's window is only its newest day: it
-- expects a ninth of each payer's whole history (340,618 rows for a batch of
-- 1,256 payers over 5 million past payments, where 65,559 were read), prices
-- a random heap fetch for each, and chose a hash join over a sequential scan
-- of all of risk_decisions instead: 4.6 s per batch (2.6 GB read), and the
-- database ceiling fell from 3,786 to 847 payments/s.
--
-- With the amount in the index the read needs no heap for pages the
-- visibility map covers; the planner prices each payer's probe as an
-- index-only range scan and takes the nested loop: 46 ms for the same batch.
-- The old index had the same keys and served only this read: it goes.
CREATE INDEX risk_decisions_payer_window_idx ON risk_decisions (payer_account, created_at)
    INCLUDE (amount_minor) WHERE decision = 'approved';
DROP INDEX risk_decisions_payer_idx;
