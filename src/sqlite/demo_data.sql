-- A small, deterministic demo data set for the default schema: 40 creators,
-- 2,000 subscribers, 4,000 pieces of content, 6,000 subscriptions, 1,500
-- scheduled posts and 20,000 transactions. Pseudo-random values come from
-- modular arithmetic, so every load produces the same rows.

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
INSERT INTO creators (id, handle, display_name, email, status, tier, country, bio, created_at, updated_at)
SELECT i,
       'creator' || i,
       (ARRAY_NAMES.first) || ' ' || (ARRAY_NAMES.last),
       'creator' || i || '@example.com',
       CASE WHEN i % 13 = 0 THEN 'paused' WHEN i % 17 = 0 THEN 'archived' ELSE 'active' END,
       CASE i % 5 WHEN 0 THEN 'premium' WHEN 1 THEN 'plus' ELSE 'standard' END,
       CASE i % 6 WHEN 0 THEN 'US' WHEN 1 THEN 'GB' WHEN 2 THEN 'DE' WHEN 3 THEN 'BR' WHEN 4 THEN 'JP' ELSE 'CA' END,
       'Demo creator number ' || i || '.',
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-01-01', '+' || (i * 7) || ' days'),
       strftime('%Y-%m-%dT%H:%M:%SZ', '2025-06-01', '+' || (i * 3) || ' days')
FROM n
JOIN (SELECT 0 AS k, 'Ava' AS first, 'Stone' AS last UNION ALL SELECT 1, 'Leo', 'Marsh'
      UNION ALL SELECT 2, 'Mia', 'Reyes' UNION ALL SELECT 3, 'Kai', 'Novak'
      UNION ALL SELECT 4, 'Zoe', 'Ito' UNION ALL SELECT 5, 'Eli', 'Costa'
      UNION ALL SELECT 6, 'Ivy', 'Brandt') AS ARRAY_NAMES ON ARRAY_NAMES.k = i % 7;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
INSERT INTO subscribers (id, username, email, country, joined_at)
SELECT i,
       'fan' || i,
       'fan' || i || '@example.net',
       CASE i % 7 WHEN 0 THEN 'US' WHEN 1 THEN 'GB' WHEN 2 THEN 'DE' WHEN 3 THEN 'FR'
                  WHEN 4 THEN 'MX' WHEN 5 THEN 'AU' ELSE NULL END,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-03-01', '+' || (i % 600) || ' days', '+' || (i % 86400) || ' seconds')
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
INSERT INTO content (id, creator_id, title, kind, status, price_cents, duration_s, published_at, created_at)
SELECT i,
       1 + (i * 7) % 40,
       CASE i % 5 WHEN 0 THEN 'Behind the scenes #' WHEN 1 THEN 'Weekly update #'
                  WHEN 2 THEN 'Live session #' WHEN 3 THEN 'Photo set #' ELSE 'Q&A #' END || i,
       CASE i % 5 WHEN 0 THEN 'video' WHEN 1 THEN 'post' WHEN 2 THEN 'stream' WHEN 3 THEN 'photo' ELSE 'audio' END,
       CASE WHEN i % 10 = 0 THEN 'draft' WHEN i % 10 = 1 THEN 'scheduled' WHEN i % 23 = 0 THEN 'archived' ELSE 'published' END,
       CASE WHEN i % 4 = 0 THEN 0 ELSE 199 + (i * 37) % 1800 END,
       CASE WHEN i % 5 IN (0, 2, 4) THEN 30 + (i * 61) % 3600 ELSE NULL END,
       CASE WHEN i % 10 IN (0, 1) THEN NULL
            ELSE strftime('%Y-%m-%dT%H:%M:%SZ', '2024-06-01', '+' || (i % 500) || ' days', '+' || ((i * 97) % 86400) || ' seconds') END,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-05-01', '+' || (i % 500) || ' days')
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
INSERT INTO subscriptions (id, subscriber_id, creator_id, plan, price_cents, status, started_at, ends_at)
SELECT i,
       1 + (i * 13) % 2000,
       1 + (i * 11 + i / 2000) % 40,
       CASE i % 6 WHEN 0 THEN 'annual' WHEN 1 THEN 'quarterly' ELSE 'monthly' END,
       CASE i % 6 WHEN 0 THEN 9900 WHEN 1 THEN 2700 ELSE 999 END,
       CASE WHEN i % 9 = 0 THEN 'cancelled' WHEN i % 14 = 0 THEN 'expired' ELSE 'active' END,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-07-01', '+' || (i % 480) || ' days'),
       CASE WHEN i % 9 = 0 OR i % 14 = 0
            THEN strftime('%Y-%m-%dT%H:%M:%SZ', '2024-07-01', '+' || (i % 480 + 30) || ' days') END
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500)
INSERT INTO schedules (id, creator_id, content_id, channel, scheduled_for, status, note, created_at)
SELECT i,
       1 + (i * 3) % 40,
       CASE WHEN i % 4 = 0 THEN NULL ELSE 1 + (i * 29) % 4000 END,
       CASE i % 4 WHEN 0 THEN 'message' WHEN 1 THEN 'feed' WHEN 2 THEN 'story' ELSE 'live' END,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2025-01-01', '+' || (i % 365) || ' days', '+' || ((i * 3600) % 86400) || ' seconds'),
       CASE WHEN i % 11 = 0 THEN 'failed' WHEN i % 7 = 0 THEN 'cancelled' WHEN i % 3 = 0 THEN 'pending' ELSE 'sent' END,
       CASE WHEN i % 5 = 0 THEN 'promo push' ELSE NULL END,
       strftime('%Y-%m-%dT%H:%M:%SZ', '2024-12-01', '+' || (i % 365) || ' days')
FROM n;

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO transactions (id, creator_id, subscriber_id, subscription_id, content_id, kind, amount_cents, occurred_at)
SELECT i,
       s.creator_id,
       s.subscriber_id,
       CASE WHEN i % 4 IN (0, 1) THEN s.id END,
       CASE WHEN i % 4 = 3 THEN 1 + (i * 31) % 4000 END,
       CASE WHEN i % 53 = 0 THEN 'refund' WHEN i % 4 IN (0, 1) THEN 'subscription' WHEN i % 4 = 2 THEN 'tip' ELSE 'purchase' END,
       CASE WHEN i % 53 = 0 THEN -s.price_cents WHEN i % 4 IN (0, 1) THEN s.price_cents
            WHEN i % 4 = 2 THEN 100 * (1 + i % 20) ELSE 199 + (i * 37) % 1800 END,
       strftime('%Y-%m-%dT%H:%M:%SZ', s.started_at, '+' || (i % 90) || ' days', '+' || ((i * 211) % 86400) || ' seconds')
FROM n JOIN subscriptions s ON s.id = 1 + (i * 7) % 6000;
