ALTER TABLE `predictions` ADD `image_file` text;--> statement-breakpoint
ALTER TABLE `predictions` ADD `image_upload_url` text;