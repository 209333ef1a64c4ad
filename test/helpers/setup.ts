import { afterEach } from 'vitest';
import { drainDisposers } from './dispose.js';

afterEach(drainDisposers);
