DROP INDEX `predictions_deadline_at`;--> statement-breakpoint
CREATE INDEX `predictions_deadline_live` ON `predictions` (`deadline_at`) WHERE status IN ('CREATED', 'PROCESSING') AND deadline_at IS NOT NULL;--> statement-breakpoint
CREATE INDEX `predictions_completed_runs` ON `predictions` (`completed_at`) WHERE status = 'COMPLETED' AND submitted_at IS NOT NULL;--> statement-breakpoint
CREATE INDEX `predictions_image_file` ON `predictions` (`image_file`) WHERE image_file IS NOT NULL;