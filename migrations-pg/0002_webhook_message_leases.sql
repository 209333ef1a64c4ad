ALTER TABLE "webhook_messages" ADD COLUMN "locked_by" text;--> statement-breakpoint
ALTER TABLE "webhook_messages" ADD COLUMN "locked_until" timestamp (3) with time zone;--> statement-breakpoint
CREATE INDEX "webhook_messages_claimable" ON "webhook_messages" USING btree (greatest(next_attempt_at, locked_until)) WHERE next_attempt_at IS NOT NULL;