"""dogbreed.serve"""
