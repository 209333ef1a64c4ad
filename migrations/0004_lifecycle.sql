ALTER TABLE `predictions` ADD `deadline_at` integer;--> statement-breakpoint
CREATE INDEX `predictions_deadline_at` ON `predictions` (`deadline_at`);