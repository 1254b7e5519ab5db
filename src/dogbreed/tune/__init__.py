"""dogbreed.tune"""
