ALTER TABLE `predictions` ADD `kept_outputs` text DEFAULT '[]' NOT NULL;--> statement-breakpoint
ALTER TABLE `predictions` ADD `webhook_token` text;