import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

// `npm run dev` serves the pages with hot reload and sends the gateway's paths to a gateway on
// :8080 (`make run`).
const gateway = 'http://127.0.0.1:8080';
export default defineConfig({
  plugins: [vue()],
  // hls.js is one 578 kB chunk (180 kB gzip), loaded only when the watch page plays HLS; the
  // room and home pages stay at ~165 kB.
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 600 },
  server: {
    proxy: {
      '/socket.io': { target: gateway, ws: true },
      '/api': gateway,
      '/whip': gateway,
      '/whep': gateway,
      '/ll': gateway,
      '^/[^/]+/[^/]+\\.(flv|m3u8|ts)$': { target: gateway, ws: true },
    },
  },
  test: { environment: 'node', include: ['test/**/*.test.js'] },
});
