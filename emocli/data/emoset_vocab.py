"""EmoSet-118K label vocabularies, in the index order of the official release's `info.json`.

Label names and their order are facts of the dataset (EmoSet-118K, `info.json` at the root of every
download); keep them exactly, including "bakery/shop" in SCENE and the trailing space in "boxing " in
HUMAN_ACTION. `info_json()` rebuilds the file's structure (label2idx / idx2label per attribute).
"""

from __future__ import annotations

# emotion: 8 classes
EMOTION: tuple[str, ...] = (
    "amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness",
)

# brightness: 11 classes
BRIGHTNESS: tuple[str, ...] = (
    "0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0",
)

# colorfulness: 11 classes
COLORFULNESS: tuple[str, ...] = (
    "0.0", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9", "1.0",
)

# scene: 254 classes
SCENE: tuple[str, ...] = (
    "airfield", "airplane_cabin", "airport_terminal", "alley", "amusement_park", "apartment_building",
    "aquarium", "arcade", "arch", "arena", "army_base", "art_gallery", "art_school", "athletic_field",
    "attic", "auditorium", "badlands", "bakery/shop", "balcony", "ballroom", "bamboo_forest",
    "banquet_hall", "bar", "baseball_field", "basement", "basketball_court", "bathroom", "bazaar",
    "beach", "beach_house", "bedroom", "beer_hall", "boardwalk", "boat_deck", "bookstore", "booth",
    "botanical_garden", "bow_window", "bowling_alley", "boxing_ring", "bridge", "building_facade",
    "bullring", "burial_chamber", "bus_interior", "butchers_shop", "butte", "cafeteria", "campsite",
    "campus", "canal", "candy_store", "canyon", "car_interior", "carrousel", "castle", "catacomb",
    "cemetery", "chalet", "childs_room", "church", "classroom", "cliff", "clothing_store", "coast",
    "cockpit", "coffee_shop", "computer_room", "conference_center", "construction_site", "corn_field",
    "corral", "corridor", "cottage", "courtyard", "creek", "crevasse", "crosswalk", "dam",
    "delicatessen", "department_store", "desert", "desert_road", "dining_room", "discotheque", "doorway",
    "dorm_room", "downtown", "dressing_room", "driveway", "elevator", "elevator_shaft", "entrance_hall",
    "escalator", "excavation", "farm", "fastfood_restaurant", "field", "field_road", "fishpond",
    "florist_shop", "food_court", "football_field", "forest", "forest_path", "forest_road",
    "formal_garden", "fountain", "garage", "gas_station", "gazebo", "gift_shop", "glacier",
    "golf_course", "greenhouse", "grotto", "gymnasium", "harbor", "hayfield", "heliport", "highway",
    "home_office", "home_theater", "hospital_room", "hot_spring", "hotel", "hotel_room", "house",
    "ice_cream_parlor", "ice_floe", "ice_shelf", "ice_skating_rink", "iceberg", "industrial_area",
    "islet", "jail_cell", "junkyard", "kasbah", "kennel", "kindergarden_classroom", "kitchen", "lagoon",
    "lake", "landfill", "lawn", "lecture_room", "library", "lighthouse", "lobby", "manufactured_home",
    "market", "martial_arts_gym", "mausoleum", "moat", "mosque", "mountain", "mountain_path",
    "mountain_snowy", "museum", "music_studio", "natural_history_museum", "nursing_home", "ocean",
    "office", "office_building", "office_cubicles", "operating_room", "orchard", "orchestra_pit",
    "pagoda", "palace", "park", "parking_lot", "pasture", "patio", "pavilion", "phone_booth",
    "picnic_area", "pier", "pizzeria", "playground", "playroom", "plaza", "pond", "porch", "promenade",
    "racecourse", "raft", "railroad_track", "rainforest", "recreation_room", "repair_shop",
    "residential_neighborhood", "restaurant", "rice_paddy", "river", "rock_arch", "rope_bridge", "ruin",
    "runway", "sauna", "shed", "shoe_shop", "shopfront", "shopping_mall", "shower", "ski_resort",
    "ski_slope", "sky", "skyscraper", "slum", "snowfield", "stable", "stadium", "stage", "staircase",
    "street", "subway_station", "supermarket", "sushi_bar", "swamp", "swimming_hole", "swimming_pool",
    "synagogue", "television_room", "television_studio", "temple", "throne_room", "topiary_garden",
    "tower", "toyshop", "train_interior", "train_station", "tree_farm", "tree_house", "trench", "tundra",
    "underwater", "valley", "vegetable_garden", "viaduct", "village", "vineyard", "volcano",
    "volleyball_court", "waiting_room", "water_park", "waterfall", "watering_hole", "wave",
    "wheat_field", "wind_farm", "windmill", "yard",
)

# object: 409 classes
OBJECT: tuple[str, ...] = (
    "Accordion", "Airplane", "Alarm clock", "Alpaca", "Animal", "Ant", "Antelope", "Apple", "Auto part",
    "Axe", "Backpack", "Baked goods", "Ball", "Balloon", "Banana", "Barge", "Barrel", "Baseball bat",
    "Baseball glove", "Bat", "Bathroom accessory", "Bathtub", "Bear", "Bee", "Beer", "Beetle",
    "Bell pepper", "Belt", "Bench", "Bicycle", "Bicycle helmet", "Bicycle wheel", "Billboard",
    "Billiard table", "Bird", "Blue jay", "Boat", "Book", "Bookcase", "Boot", "Bottle", "Bowl",
    "Bowling equipment", "Box", "Bread", "Broccoli", "Bronze sculpture", "Brown bear", "Building",
    "Bull", "Bus", "Bust", "Butterfly", "Cabbage", "Cake", "Cake stand", "Camel", "Camera", "Canary",
    "Candle", "Candy", "Cannon", "Canoe", "Car", "Carnivore", "Carrot", "Cart", "Castle", "Cat",
    "Cat furniture", "Caterpillar", "Ceiling fan", "Cello", "Centipede", "Chair", "Cheetah",
    "Chest of drawers", "Chicken", "Chopsticks", "Christmas tree", "Clock", "Coat", "Cocktail",
    "Coconut", "Coffee", "Coffee cup", "Coffee table", "Coffeemaker", "Coin", "Computer keyboard",
    "Computer monitor", "Computer mouse", "Convenience store", "Cookie", "Couch", "Countertop",
    "Cowboy hat", "Crab", "Crocodile", "Croissant", "Crown", "Cucumber", "Cupboard", "Curtain", "Dagger",
    "Dairy Product", "Deer", "Dessert", "Dice", "Dinosaur", "Dog", "Dog bed", "Doll", "Dolphin", "Door",
    "Door handle", "Doughnut", "Dragonfly", "Drawer", "Drill", "Drink", "Drum", "Duck", "Eagle",
    "Earrings", "Egg", "Elephant", "Falcon", "Fashion accessory", "Fast food", "Fedora", "Fire hydrant",
    "Fireplace", "Fish", "Flag", "Flower", "Flowerpot", "Flute", "Food", "Football", "Fork", "Fountain",
    "Fox", "French fries", "French horn", "Frog", "Fruit", "Furniture", "Garden Asparagus", "Gas stove",
    "Giraffe", "Glasses", "Glove", "Goat", "Goggles", "Goldfish", "Gondola", "Goose", "Grape", "Guitar",
    "Hamburger", "Hamster", "Handbag", "Handgun", "Harbor seal", "Harp", "Hat", "Headphones", "Hedgehog",
    "Helicopter", "Helmet", "High heels", "Hiking equipment", "Hippopotamus", "Home appliance", "Horse",
    "Hot dog", "House", "Houseplant", "Ice cream", "Infant bed", "Insect", "Invertebrate", "Isopod",
    "Jacket", "Jaguar", "Jeans", "Jet ski", "Juice", "Kangaroo", "Kettle", "Kitchen & dining room table",
    "Kitchen appliance", "Kite", "Knife", "Ladder", "Ladybug", "Lamp", "Land vehicle", "Lantern",
    "Laptop", "Lavender", "Lemon", "Leopard", "Light bulb", "Light switch", "Lighthouse", "Lily", "Lion",
    "Lizard", "Lobster", "Loveseat", "Luggage and bags", "Lynx", "Magpie", "Mammal", "Mango", "Maple",
    "Marine invertebrates", "Marine mammal", "Mechanical fan", "Medical equipment", "Microphone",
    "Miniskirt", "Mirror", "Mixing bowl", "Mobile phone", "Monkey", "Moths and butterflies",
    "Motorcycle", "Mouse", "Muffin", "Mug", "Mule", "Mushroom", "Musical instrument", "Musical keyboard",
    "Necklace", "Nightstand", "Office supplies", "Orange", "Organ", "Ostrich", "Otter", "Oven", "Owl",
    "Oyster", "Paddle", "Palm tree", "Pancake", "Panda", "Parachute", "Parrot", "Pasta", "Pastry",
    "Peach", "Pear", "Pen", "Penguin", "Personal flotation device", "Piano", "Picnic basket",
    "Picture frame", "Pig", "Pillow", "Pineapple", "Pizza", "Plant", "Plastic bag", "Plate",
    "Plumbing fixture", "Polar bear", "Popcorn", "Porch", "Poster", "Potato", "Pumpkin", "Rabbit",
    "Raccoon", "Racket", "Raven", "Red panda", "Refrigerator", "Reptile", "Rhinoceros", "Rifle",
    "Roller skates", "Rose", "Rugby ball", "Ruler", "Salad", "Sandal", "Sandwich", "Saucer", "Saxophone",
    "Scarf", "Scissors", "Scorpion", "Sculpture", "Sea lion", "Sea turtle", "Seafood", "Segway", "Sheep",
    "Shelf", "Shellfish", "Shirt", "Shorts", "Shotgun", "Shrimp", "Sink", "Skateboard", "Ski", "Skirt",
    "Skull", "Skyscraper", "Slow cooker", "Snack", "Snail", "Snake", "Snowboard", "Snowman",
    "Snowmobile", "Sock", "Sofa bed", "Sombrero", "Sparrow", "Spider", "Spoon", "Sports equipment",
    "Sports uniform", "Squirrel", "Stairs", "Starfish", "Stop sign", "Strawberry", "Street light",
    "Suit", "Suitcase", "Sun hat", "Sunflower", "Sunglasses", "Surfboard", "Sushi", "Swan", "Swim cap",
    "Swimming pool", "Swimwear", "Table", "Table tennis racket", "Tablet computer", "Tableware", "Tap",
    "Taxi", "Tea", "Teapot", "Teddy bear", "Television", "Tennis ball", "Tennis racket", "Tent", "Tiara",
    "Tie", "Tiger", "Tin can", "Toilet", "Tomato", "Tool", "Tortoise", "Tower", "Toy", "Traffic light",
    "Traffic sign", "Train", "Tree", "Tripod", "Trombone", "Trousers", "Truck", "Trumpet", "Turkey",
    "Umbrella", "Unicycle", "Van", "Vase", "Vegetable", "Vehicle registration plate", "Violin",
    "Volleyball", "Wall clock", "Wardrobe", "Washing machine", "Waste container", "Watch", "Watermelon",
    "Weapon", "Whale", "Wheel", "Wheelchair", "Willow", "Window", "Window blind", "Wine", "Wine glass",
    "Wine rack", "Wok", "Woodpecker", "Worm", "Zebra",
)

# facial_expression: 6 classes
FACIAL_EXPRESSION: tuple[str, ...] = (
    "angry", "disgust", "fear", "happy", "sad", "surprise",
)

# human_action: 264 classes
HUMAN_ACTION: tuple[str, ...] = (
    "abseiling", "answering questions", "applauding", "applying cream", "archery", "arm wrestling",
    "arranging flowers", "baby waking up", "baking cookies", "balloon blowing", "bandaging",
    "barbequing", "bartending", "belly dancing", "bending back", "bending metal", "biking through snow",
    "blowing leaves", "blowing nose", "blowing out candles", "bouncing on trampoline", "bowling",
    "boxing ", "braiding hair", "brush painting", "brushing hair", "brushing teeth", "bungee jumping",
    "busking", "canoeing or kayaking", "carrying baby", "cartwheeling", "carving pumpkin",
    "catching fish", "catching or throwing baseball", "catching or throwing frisbee", "celebrating",
    "changing wheel", "cheerleading", "clapping", "clay pottery making", "cleaning toilet",
    "climbing a rope", "climbing ladder", "climbing tree", "contact juggling", "cooking egg",
    "cooking on campfire", "counting money", "crawling baby", "crossing river", "crying", "curling hair",
    "cutting nails", "cutting pineapple", "cutting watermelon", "dancing", "dancing ballet",
    "decorating the christmas tree", "digging", "dining", "diving cliff", "doing aerobics",
    "doing laundry", "drawing", "dribbling basketball", "drinking", "drinking beer", "drinking shots",
    "driving car", "driving tractor", "drop kicking", "dunking basketball", "eating burger",
    "eating cake", "eating carrots", "eating chips", "eating doughnuts", "eating hotdog",
    "eating ice cream", "eating spaghetti", "eating watermelon", "exercising arm",
    "exercising with an exercise ball", "extinguishing fire", "feeding birds", "feeding fish",
    "feeding goats", "finger snapping", "fixing hair", "flying kite", "folding paper",
    "garbage collecting", "getting a haircut", "getting a tattoo", "giving or receiving award",
    "gymnastics tumbling", "headbanging", "headbutting", "high kick", "hitting baseball",
    "holding snake", "hugging", "hula hooping", "ice climbing", "ice fishing", "ice skating",
    "jetskiing", "jogging", "juggling balls", "juggling fire", "juggling soccer ball",
    "jumping into pool", "jumpstyle dancing", "kicking field goal", "kicking soccer ball", "kissing",
    "kitesurfing", "knitting", "laughing", "lunge", "making a cake", "making a sandwich", "making bed",
    "making pizza", "making snowman", "making tea", "marching", "massaging back", "massaging feet",
    "massaging person's head", "motorcycling", "moving furniture", "opening bottle", "opening present",
    "paragliding", "petting animal (not cat)", "petting cat", "picking fruit", "playing accordion",
    "playing badminton", "playing bagpipes", "playing basketball", "playing bass guitar",
    "playing cards", "playing cello", "playing chess", "playing cricket", "playing cymbals",
    "playing drums", "playing flute", "playing golf", "playing guitar", "playing harmonica",
    "playing hockey", "playing ice hockey", "playing keyboard", "playing kickball", "playing piano",
    "playing poker", "playing saxophone", "playing tennis", "playing trombone", "playing trumpet",
    "playing ukulele", "playing violin", "playing volleyball", "pull ups", "pumping fist",
    "punching bag", "push up", "pushing car", "pushing cart", "pushing wheelchair", "reading book",
    "reading newspaper", "recording music", "riding a bike", "riding camel", "riding elephant",
    "riding mechanical bull", "riding mountain bike", "riding mule", "riding or walking with horse",
    "riding scooter", "riding unicycle", "rock climbing", "rock scissors paper", "roller skating",
    "sailing", "scuba diving", "shaking hands", "shaking head", "shooting basketball",
    "shooting goal (soccer)", "shoveling snow", "side kick", "singing", "situp", "skateboarding",
    "skiing", "skydiving", "slacklining", "slapping", "sled dog racing", "smoking", "smoking hookah",
    "sniffing", "snorkeling", "snowboarding", "snowkiting", "snowmobiling", "somersaulting", "spraying",
    "squat", "sticking tongue out", "stretching arm", "stretching leg", "strumming guitar",
    "surfing crowd", "surfing water", "sweeping floor", "swimming backstroke", "swimming breast stroke",
    "swimming butterfly stroke", "swing dancing", "swinging legs", "swinging on something",
    "sword fighting", "tai chi", "taking a shower", "tapping guitar", "tasting beer", "tasting food",
    "texting", "throwing axe", "throwing ball", "tobogganing", "tossing salad", "training dog",
    "trimming or shaving beard", "tying bow tie", "tying tie", "unloading truck", "using computer",
    "using remote controller (not gaming)", "using segway", "waiting in line", "walking the dog",
    "washing dishes", "washing feet", "washing hair", "washing hands", "water skiing", "water sliding",
    "watering plants", "welding", "whistling", "windsurfing", "wrapping present", "wrestling", "writing",
    "yawning", "yoga",
)

# attribute -> vocabulary, in the key order of info.json
VOCABS: dict[str, tuple[str, ...]] = {
    "emotion": EMOTION,
    "brightness": BRIGHTNESS,
    "colorfulness": COLORFULNESS,
    "scene": SCENE,
    "object": OBJECT,
    "facial_expression": FACIAL_EXPRESSION,
    "human_action": HUMAN_ACTION,
}

# keys of a per-image annotation JSON (every one optional); "object" holds a list, the rest one value
ANNOTATION_KEYS: tuple[str, ...] = (
    "scene", "object", "facial_expression", "human_action", "brightness", "colorfulness",
)

# attributes whose idx2label values are floats in info.json (labels "0.0" ... "1.0")
NUMERIC_ATTRIBUTES: tuple[str, ...] = ("brightness", "colorfulness")


def info_json() -> dict:
    """The structure of EmoSet-118K's `info.json`: {attribute: {"label2idx": ..., "idx2label": ...}}.

    label2idx maps name -> int index; idx2label maps str(index) -> name, except for brightness and
    colorfulness, whose idx2label values are floats (0.0 ... 1.0) while their label2idx keys are strings.
    `json.dumps(info_json(), indent=2)` reproduces the released file byte for byte.
    """
    out: dict = {}
    for attr, labels in VOCABS.items():
        numeric = attr in NUMERIC_ATTRIBUTES
        out[attr] = {
            "label2idx": {label: i for i, label in enumerate(labels)},
            "idx2label": {str(i): (float(label) if numeric else label) for i, label in enumerate(labels)},
        }
    return out
