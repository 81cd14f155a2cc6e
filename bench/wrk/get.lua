-- A fixed GET with the COOKIE header from the environment (authorize with a live session).
wrk.headers["Cookie"] = os.getenv("COOKIE")
