CREATE TABLE `predictions` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`id` text NOT NULL,
	`upstream_id` text,
	`model` text NOT NULL,
	`status` text NOT NULL,
	`prompt` text NOT NULL,
	`image` text,
	`has_image` integer NOT NULL,
	`enable_prompt_expansion` integer NOT NULL,
	`outputs` text DEFAULT '[]' NOT NULL,
	`has_nsfw_contents` text DEFAULT '[]' NOT NULL,
	`urls_get` text,
	`error` text,
	`inference_ms` integer,
	`version` integer DEFAULT 1 NOT NULL,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`submitted_at` integer,
	`completed_at` integer,
	`next_poll_at` integer,
	`poll_count` integer DEFAULT 0 NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `predictions_id_unique` ON `predictions` (`id`);--> statement-breakpoint
CREATE INDEX `predictions_next_poll_at` ON `predictions` (`next_poll_at`);--> statement-breakpoint
CREATE INDEX `predictions_status_seq` ON `predictions` (`status`,`seq`);