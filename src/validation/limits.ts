/** The upstream's documented limits, and ours derived from them. */
export const MAX_PROMPT_CHARS = 2000;
/** "The image file size cannot exceed 20MB": we read MB as MiB, the larger, to refuse nothing upstream takes. */
export const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
export const MIN_IMAGE_SHORT_SIDE = 301;
export const MAX_IMAGE_URL_CHARS = 4096;
/**
 * A request body must hold a 20 MiB image as base64 (27,962,028 characters) plus the query and a
 * prompt; 28 MiB leaves ~1.4 MB of room and refuses anything much larger before it is parsed.
 */
export const MAX_REQUEST_BYTES = 28 * 1024 * 1024;
