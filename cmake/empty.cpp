// intentionally empty: lets a module folder build before it has sources
