CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`prefix` text NOT NULL,
	`key_hash` text NOT NULL,
	`per_minute` integer,
	`max_in_flight` integer,
	`created_at` integer NOT NULL,
	`revoked_at` integer
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_key_hash_unique` ON `api_keys` (`key_hash`);--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_live_name` ON `api_keys` (`name`) WHERE "api_keys"."revoked_at" is null;--> statement-breakpoint
CREATE TABLE `idempotency_keys` (
	`owner` text NOT NULL,
	`key` text NOT NULL,
	`input_hash` text NOT NULL,
	`prediction_id` text NOT NULL,
	`created_at` integer NOT NULL,
	PRIMARY KEY(`owner`, `key`)
);
--> statement-breakpoint
CREATE INDEX `idempotency_keys_created_at` ON `idempotency_keys` (`created_at`);--> statement-breakpoint
ALTER TABLE `predictions` ADD `owner` text;--> statement-breakpoint
CREATE INDEX `predictions_owner_seq` ON `predictions` (`owner`,`seq`);--> statement-breakpoint
CREATE INDEX `predictions_owner_status_seq` ON `predictions` (`owner`,`status`,`seq`);