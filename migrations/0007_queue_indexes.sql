ALTER TABLE `predictions` ADD `queue_turn` integer;--> statement-breakpoint
CREATE INDEX `predictions_queue` ON `predictions` (`queue_turn`,`seq`) WHERE status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL;--> statement-breakpoint
CREATE INDEX `predictions_queue_owner` ON `predictions` (`owner`,`queue_turn`) WHERE status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL;--> statement-breakpoint
CREATE INDEX `predictions_queue_due` ON `predictions` (`next_poll_at`) WHERE status = 'CREATED' AND upstream_id IS NULL AND submit_started_at IS NULL;--> statement-breakpoint
CREATE INDEX `predictions_started_due` ON `predictions` (`next_poll_at`) WHERE upstream_id IS NOT NULL OR submit_started_at IS NOT NULL;--> statement-breakpoint
CREATE INDEX `predictions_upstream_live` ON `predictions` (`seq`) WHERE status IN ('CREATED', 'PROCESSING') AND (upstream_id IS NOT NULL OR submit_started_at IS NOT NULL);--> statement-breakpoint
CREATE INDEX `predictions_submitted_at` ON `predictions` (`submitted_at`);--> statement-breakpoint
CREATE INDEX `predictions_submit_started_at` ON `predictions` (`submit_started_at`);--> statement-breakpoint
UPDATE `predictions` SET `queue_turn` = 0 WHERE `queue_turn` IS NULL;