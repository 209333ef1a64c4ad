ALTER TABLE `predictions` ADD `submit_attempts` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `predictions` ADD `submit_started_at` integer;--> statement-breakpoint
CREATE UNIQUE INDEX `predictions_upstream_id` ON `predictions` (`upstream_id`);