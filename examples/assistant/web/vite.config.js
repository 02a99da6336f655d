import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// base "./": the page works wherever it is served (agentflow dev serves it
// at /chat/). No source maps, so dist/ stays small; the source is here.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false, chunkSizeWarningLimit: 1024 },
});
