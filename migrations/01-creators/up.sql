-- The EROS creator-management schema: creators, what they publish, who
-- subscribes, what is scheduled and what is paid.

CREATE TABLE creators (
    id            INTEGER PRIMARY KEY,
    handle        TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    display_name  TEXT    NOT NULL,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    status        TEXT    NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'paused', 'archived')),
    tier          TEXT    NOT NULL DEFAULT 'standard'
                          CHECK (tier IN ('standard', 'plus', 'premium')),
    country       TEXT,
    bio           TEXT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    updated_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX creators_status ON creators (status);

CREATE TABLE content (
    id            INTEGER PRIMARY KEY,
    creator_id    INTEGER NOT NULL REFERENCES creators (id) ON DELETE CASCADE,
    title         TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('video', 'photo', 'post', 'stream', 'audio')),
    status        TEXT    NOT NULL DEFAULT 'draft'
                          CHECK (status IN ('draft', 'scheduled', 'published', 'archived')),
    price_cents   INTEGER NOT NULL DEFAULT 0 CHECK (price_cents >= 0),
    duration_s    INTEGER CHECK (duration_s IS NULL OR duration_s >= 0),
    published_at  TEXT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX content_creator_status ON content (creator_id, status);
CREATE INDEX content_published_at ON content (published_at);

CREATE TABLE subscribers (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    country       TEXT,
    joined_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

CREATE TABLE subscriptions (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    creator_id    INTEGER NOT NULL REFERENCES creators (id) ON DELETE CASCADE,
    plan          TEXT    NOT NULL CHECK (plan IN ('monthly', 'quarterly', 'annual')),
    price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
    status        TEXT    NOT NULL DEFAULT 'active'
                          CHECK (status IN ('active', 'cancelled', 'expired')),
    started_at    TEXT    NOT NULL,
    ends_at       TEXT,
    UNIQUE (subscriber_id, creator_id, started_at)
);
CREATE INDEX subscriptions_creator_status ON subscriptions (creator_id, status);
CREATE INDEX subscriptions_subscriber ON subscriptions (subscriber_id);

CREATE TABLE schedules (
    id            INTEGER PRIMARY KEY,
    creator_id    INTEGER NOT NULL REFERENCES creators (id) ON DELETE CASCADE,
    content_id    INTEGER REFERENCES content (id) ON DELETE SET NULL,
    channel       TEXT    NOT NULL CHECK (channel IN ('feed', 'message', 'story', 'live')),
    scheduled_for TEXT    NOT NULL,
    status        TEXT    NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    note          TEXT,
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE INDEX schedules_creator_time ON schedules (creator_id, scheduled_for);
CREATE INDEX schedules_status_time ON schedules (status, scheduled_for);

CREATE TABLE transactions (
    id              INTEGER PRIMARY KEY,
    creator_id      INTEGER NOT NULL REFERENCES creators (id) ON DELETE CASCADE,
    subscriber_id   INTEGER REFERENCES subscribers (id) ON DELETE SET NULL,
    subscription_id INTEGER REFERENCES subscriptions (id) ON DELETE SET NULL,
    content_id      INTEGER REFERENCES content (id) ON DELETE SET NULL,
    kind            TEXT    NOT NULL CHECK (kind IN ('subscription', 'tip', 'purchase', 'refund')),
    amount_cents    INTEGER NOT NULL,
    occurred_at     TEXT    NOT NULL
);
CREATE INDEX transactions_creator_time ON transactions (creator_id, occurred_at);
CREATE INDEX transactions_subscriber ON transactions (subscriber_id);

-- Revenue per creator, the question agents ask first.
CREATE VIEW creator_revenue AS
SELECT c.id AS creator_id,
       c.handle,
       COUNT(t.id) AS transactions,
       COALESCE(SUM(t.amount_cents), 0) AS revenue_cents
FROM creators c
LEFT JOIN transactions t ON t.creator_id = c.id
GROUP BY c.id;
