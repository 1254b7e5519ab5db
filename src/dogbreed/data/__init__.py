"""dogbreed.data"""
